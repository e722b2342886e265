#!/usr/bin/env node
import { doctor, formatDoctor } from './doctor.js'

const USAGE = `Usage: stoq <command> [options]

Commands:
  doctor [--json]   what this machine offers (GSO/GRO, io_uring, NUMA, affinity, NIC offloads,
                    buffer limits) and which paths STOQ will use
  help              this text`

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'doctor': {
      const unknown = rest.filter((a) => a !== '--json')
      if (unknown.length > 0) {
        process.stderr.write(`stoq doctor: unknown option ${unknown[0]}\n${USAGE}\n`)
        return 2
      }
      const report = await doctor()
      process.stdout.write(rest.includes('--json') ? `${JSON.stringify(report, null, 2)}\n` : `${formatDoctor(report, process.stdout.columns ?? 120)}\n`)
      return 0
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`)
      return command === undefined ? 2 : 0
    default:
      process.stderr.write(`stoq: unknown command ${JSON.stringify(command)}\n${USAGE}\n`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    process.stderr.write(`stoq: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exitCode = 1
  },
)
