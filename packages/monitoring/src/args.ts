/**
 * Argument checks shared by the public entry points. Internal: not exported
 * from the package.
 */

/** A wrong value, described for an error message (the helper every package shares). */
export { describeValue as show } from '@stoq/interface'
