'use strict'
// The prebuilt libstoq_quinn.so of this package and what it needs (library.json, written by
// @stoq/engine-quinn's build). CommonJS, so that both require() and import give the same object.
const path = require('node:path')
const meta = require('./library.json')

module.exports = { ...meta, library: path.join(__dirname, meta.file) }
