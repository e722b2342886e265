/**
 * apt on a Debian suite of our choosing, without touching the system's apt setup: a sources
 * list, package lists, cache and an empty dpkg status of its own under `work`, so packages
 * resolve against that suite alone. Used by build-native.mjs (Rust crates from forky) and by
 * tests that need a newer tool than the system has (OpenSSL 3.5 from trixie).
 */
import fs from 'node:fs'
import path from 'node:path'

/**
 * Lay out `work` for apt and return the `-o` options every apt-get / apt-cache call takes,
 * with the directories for downloaded (`debs`) and unpacked (`root`) packages.
 */
export function privateApt(work, suite, mirror) {
  const lists = path.join(work, 'lists')
  const cache = path.join(work, 'cache')
  const debs = path.join(work, 'debs')
  const root = path.join(work, 'root')
  for (const d of [path.join(lists, 'partial'), path.join(cache, 'archives', 'partial'), debs, root]) fs.mkdirSync(d, { recursive: true })
  const sources = path.join(work, 'sources.list')
  fs.writeFileSync(sources, `deb ${mirror} ${suite} main\n`)
  const status = path.join(work, 'status')
  fs.writeFileSync(status, '')
  const options = [
    '-o',
    `Dir::Etc::SourceList=${sources}`,
    '-o',
    'Dir::Etc::SourceParts=/dev/null',
    '-o',
    `Dir::State::Lists=${lists}`,
    '-o',
    `Dir::Cache=${cache}`,
    // An empty dpkg status: resolve against the suite alone, not what this system has installed.
    '-o',
    `Dir::State::status=${status}`,
    '-o',
    'Debug::NoLocking=1',
  ]
  // As root, apt drops to the _apt user, who cannot write into a home directory.
  if (typeof process.getuid === 'function' && process.getuid() === 0) options.push('-o', 'APT::Sandbox::User=root')
  return { options, debs, root }
}
