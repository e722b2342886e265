'use strict'
// The prebuilt libstoq_quinn.so of this package and what it needs (library.json, written by
// @stoq/engine-quinn's build). CommonJS with one `exports.name =` per field, so that require(),
// a default import and named imports (which Node finds by reading these lines) all work.
const path = require('node:path')
const meta = require('./library.json')

exports.library = path.join(__dirname, meta.file)
exports.file = meta.file
exports.glibc = meta.glibc
exports.glibcVersions = meta.glibcVersions
exports.builtOn = meta.builtOn
exports.rustc = meta.rustc
exports.sha256 = meta.sha256
