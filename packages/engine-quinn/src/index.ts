export { QuinnEngine, quinnEngine, QUINN_MAX_PACKET } from './engine.js'
export { loadQuinn, quinnLibraryPath, abiInfo, ABI_VERSION, type QuinnLoadResult } from './native.js'
export { quinnAvailability, type QuinnAvailability } from './availability.js'
export { ABI, CONFIG_FIELDS, type EngineConfig } from './abi.js'
