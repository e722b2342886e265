import { packetBatcherTests } from '../src/index.js'
import { referenceBatcher } from './reference-batcher.js'

packetBatcherTests('reference batcher', { create: referenceBatcher })
