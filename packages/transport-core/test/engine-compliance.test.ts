import { quicEngineTests, testPki } from '@stoq/compliance-tests'
import { QuicheEngine, DEFAULT_TRANSPORT } from '../src/index.js'

const pki = await testPki()

quicEngineTests('quiche', {
  create: (options) => new QuicheEngine(options),
  transport: DEFAULT_TRANSPORT,
  identity: { cert: pki.server.cert, key: pki.server.key, ca: pki.ca },
})
