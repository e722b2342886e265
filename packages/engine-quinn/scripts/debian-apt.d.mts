/** See debian-apt.mjs. */
export function privateApt(work: string, suite: string, mirror: string): { options: string[]; debs: string; root: string }
