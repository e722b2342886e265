export { QuinnEngine, quinnEngine, QUINN_MAX_PACKET } from './engine.js'
export {
  loadQuinn,
  quinnLibraryPath,
  localLibraryPath,
  platformPackageName,
  quinnPlatform,
  runtimeGlibc,
  buildFromSourceCommand,
  PREBUILT_PLATFORMS,
  glibcTooOld,
  compareVersions,
  abiInfo,
  ABI_VERSION,
  type QuinnLoadResult,
  type PrebuiltInfo,
} from './native.js'
export { quinnAvailability, type QuinnAvailability } from './availability.js'
export { ABI, CONFIG_FIELDS, type EngineConfig } from './abi.js'
