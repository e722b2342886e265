import { quicEngineTests, testPki } from '@stoq/compliance-tests'
import { DEFAULT_TRANSPORT } from '@stoq/transport-core'
import { QuinnEngine } from '../src/index.js'

const pki = await testPki()

quicEngineTests('quinn', {
  create: (options) => new QuinnEngine(options),
  transport: DEFAULT_TRANSPORT,
  identity: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca },
})
