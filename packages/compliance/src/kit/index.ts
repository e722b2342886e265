// The shared test kit: helpers every package's tests had their own copy of.
export { stoqErrorOf } from './errors.js'
export { pattern, sha256Hex } from './pattern.js'
export { readAll, readAllText, type ByteSource } from './streams.js'
export { waitFor, type WaitForOptions } from './wait.js'
export { WRONG_VALUE_NAMES, withoutWrongValues, wrongValues, type WrongValue, type WrongValueName } from './wrong-values.js'
export { TEST_TRANSPORT } from './transport.js'
export { EngineEventRecorder } from './engine-events.js'
