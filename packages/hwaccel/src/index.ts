export { DgramUdpIo, dgramUdpIo, type DgramUdpIoOptions } from './dgram-io.js'
export { toSocketAddress, toWireHost, parseHostPort } from './address.js'
export * from './defaults.js'
