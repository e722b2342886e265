export { QuicheEngine, quicheEngine, QUICHE_MAX_PACKET } from './engine.js'
export { CID_LEN, checkCidPrefix } from './cid.js'
export { QUICHE_BINDING_PACKAGE } from './binding.js'
export { RetryTokens, RETRY_TOKEN_LIFETIME_MS } from './retry-token.js'
