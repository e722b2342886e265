export * from './errors.js'
export * from './contracts.js'
