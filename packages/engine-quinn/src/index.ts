export { QuinnEngine, quinnEngine, QUINN_MAX_PACKET } from './engine.js'
export { loadQuinn, quinnLibraryPath, ABI_VERSION, type QuinnLoadResult } from './native.js'
export { quinnAvailability, type QuinnAvailability } from './availability.js'
