import { quicEngineTests, testPki } from '@stoq/compliance-tests'
import { QuicheEngine } from '@stoq/engine-quiche'
import { QuinnEngine, DEFAULT_TRANSPORT } from '../src/index.js'

const pki = await testPki()
const identity = { cert: pki.server.cert, key: pki.server.key, ca: pki.ca }

quicEngineTests('quiche', {
  create: (options) => new QuicheEngine(options),
  transport: DEFAULT_TRANSPORT,
  identity,
})

// The quinn engine must load where the README's install ran: a missing library fails here.
quicEngineTests('quinn', {
  create: (options) => new QuinnEngine(options),
  transport: DEFAULT_TRANSPORT,
  identity,
})
