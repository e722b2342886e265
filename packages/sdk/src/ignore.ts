/**
 * `.catch(ignoreRejection)`: for a promise whose rejection needs no handling, typically a write,
 * cancel or close on a stream or connection that is being torn down, whose failure is already
 * reported elsewhere (the connection's `closed`, the session's own error). Each use says why on
 * its line.
 */
export function ignoreRejection(): void {
  // Deliberately nothing: see the comment at each use.
}
