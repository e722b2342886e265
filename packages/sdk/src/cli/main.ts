#!/usr/bin/env node
import { fileURLToPath } from 'node:url'
import { doctor, formatDoctor } from '../doctor.js'
import { parseArgs } from './args.js'
import { StoqUsageError, describeError } from './errors.js'
import { BENCH_HELP, benchCommand, type CommandIo } from './bench.js'
import { SEND_HELP, SERVE_HELP, sendCommand, serveCommand } from './transfer.js'
import { STATS_HELP, statsCommand } from './stats.js'

const USAGE = `Usage: stoq <command> [options]

Commands:
  doctor [--json]              what this machine offers (GSO/GRO, io_uring, NUMA, affinity, NIC
                               offloads, buffer limits) and which paths STOQ will use
  bench [HOST:PORT] [options]  throughput, counted and verified by the receiver: on loopback
                               with no address, or against "stoq bench --server"
  serve DIR|- [options]        receive files over STOQ into DIR (or one to stdout)
  serve --webtransport         WebTransport echo server for browsers, with an example page
  send FILE|- HOST:PORT        send a file (or stdin) to "stoq serve", checked with SHA-256
  stats URL [--watch]          live figures of a running process from its /metrics endpoint
  help [COMMAND]               this text, or a command's

Run "stoq COMMAND --help" for a command's options.`

const DOCTOR_HELP = `Usage: stoq doctor [--json]

Probes what this machine offers (GSO/GRO, io_uring, NUMA, CPU affinity, NIC
offloads, socket buffer limits), which QUIC engines load, and which engine and
UDP backend an endpoint gets here (a loopback endpoint is bound to find out).

Options:
  --json       the report as JSON
  -h, --help   this text`

const HELP: Record<string, string> = { doctor: DOCTOR_HELP, bench: BENCH_HELP, serve: SERVE_HELP, send: SEND_HELP, stats: STATS_HELP }

const io: CommandIo = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  cliPath: fileURLToPath(import.meta.url),
}

async function doctorCommand(argv: string[]): Promise<number> {
  const { values, positionals, help } = parseArgs('doctor', argv, { json: { type: 'flag' } })
  if (help) {
    io.out(`${DOCTOR_HELP}\n`)
    return 0
  }
  if (positionals.length > 0) throw new StoqUsageError('doctor', positionals[0]!, `unexpected argument ${JSON.stringify(positionals[0])}`)
  const report = await doctor()
  io.out(values.json === true ? `${JSON.stringify(report, null, 2)}\n` : `${formatDoctor(report, process.stdout.columns ?? 120)}\n`)
  return 0
}

async function run(command: string | undefined, rest: string[]): Promise<number> {
  switch (command) {
    case 'doctor':
      return doctorCommand(rest)
    case 'bench':
      return benchCommand(rest, io)
    case 'serve':
      return serveCommand(rest, io)
    case 'send':
      return sendCommand(rest, io)
    case 'stats':
      return statsCommand(rest, io)
    case 'help':
    case '--help':
    case '-h': {
      const topic = rest[0]
      if (topic !== undefined && HELP[topic] === undefined) {
        throw new StoqUsageError('help', topic, `no command ${JSON.stringify(topic)}; commands: ${Object.keys(HELP).join(', ')}`)
      }
      io.out(`${topic !== undefined ? HELP[topic] : USAGE}\n`)
      return 0
    }
    case undefined:
      io.err(`${USAGE}\n`)
      return 2
    default:
      io.err(`stoq: unknown command ${JSON.stringify(command)}\n${USAGE}\n`)
      return 2
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  try {
    return await run(command, rest)
  } catch (err) {
    const name = command === undefined || command.startsWith('-') ? 'stoq' : `stoq ${command}`
    if (err instanceof StoqUsageError) {
      io.err(`${name}: ${err.message}\nRun "${name === 'stoq help' ? 'stoq' : name} --help" for usage.\n`)
      return 2
    }
    io.err(`${name}: ${describeError(err)}\n`)
    return 1
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
    // Everything is closed by now; should a stray handle remain, do not hang on it.
    setTimeout(() => process.exit(code), 3000).unref()
  },
  (err: unknown) => {
    process.stderr.write(`stoq: ${describeError(err)}\n`)
    process.exit(1)
  },
)
