export * from './errors.js'
export * from './contracts.js'
export * from './ip.js'
export * from './options.js'
