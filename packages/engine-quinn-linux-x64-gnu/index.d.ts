/** The prebuilt library of this package and what it needs (from library.json). */
declare const prebuilt: {
  /** Absolute path of libstoq_quinn.so. */
  library: string
  /** File name of the library, next to this file. */
  file: string
  /** Lowest glibc that can load it: the highest GLIBC_x.y version it references, e.g. "2.34". */
  glibc: string | null
  /** Every GLIBC_ version the library references. */
  glibcVersions: string[]
  /** The system it was built on, e.g. "Debian GNU/Linux 12 (bookworm), glibc 2.36". */
  builtOn: string
  /** The Rust compiler that built it. */
  rustc: string
  /** SHA-256 of the library file. */
  sha256: string
}
export = prebuilt
