import { udpIoTests } from '../src/index.js'
import { ReferenceUdpIo } from './reference-udp-io.js'

udpIoTests('reference dgram', { create: () => new ReferenceUdpIo() })
