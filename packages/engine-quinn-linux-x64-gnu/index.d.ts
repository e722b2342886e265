/** Absolute path of the prebuilt libstoq_quinn.so. */
export declare const library: string
/** File name of the library, next to this file. */
export declare const file: string
/** Lowest glibc that can load it: the highest GLIBC_x.y version it references, e.g. "2.34". */
export declare const glibc: string | null
/** Every GLIBC_ version the library references. */
export declare const glibcVersions: string[]
/** The system it was built on, e.g. "Debian GNU/Linux 12 (bookworm), glibc 2.36". */
export declare const builtOn: string
/** The Rust compiler that built it. */
export declare const rustc: string
/** SHA-256 of the library file. */
export declare const sha256: string
