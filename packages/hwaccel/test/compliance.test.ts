import { udpIoTests } from '@stoq/compliance-tests'
import { DgramUdpIo } from '../src/index.js'

udpIoTests('dgram', { create: () => new DgramUdpIo() })
