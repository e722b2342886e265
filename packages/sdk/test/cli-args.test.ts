import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { StoqError } from '../src/index.js'
import { parseArgs, parseSize } from '../src/cli/args.js'

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url))
const config = fs.mkdtempSync(path.join(os.tmpdir(), 'stoq-cli-args-'))
afterAll(() => fs.rmSync(config, { recursive: true, force: true }))

function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...process.env, XDG_CONFIG_HOME: config }, timeout: 20_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1
      resolve({ code, stdout, stderr })
    })
  })
}

describe('stoq --help', () => {
  it.each([
    [['bench', '--help'], 'stoq bench --server'],
    [['serve', '--help'], 'stoq serve DIR'],
    [['send', '--help'], 'stoq send FILE HOST:PORT'],
    [['doctor', '--help'], 'stoq doctor [--json]'],
    [['help', 'bench'], 'stoq bench HOST:PORT'],
    [['help'], 'Commands:'],
    [['--help'], 'Commands:'],
    [['bench', '-h'], '--connections N'],
  ])('stoq %j prints its usage and exits 0', async (args, expected) => {
    const run = await runCli(args)
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('Usage')
    expect(run.stdout).toContain(expected)
    expect(run.stderr).toBe('')
  })
})

describe('bad arguments exit with 2 and say what is wrong', () => {
  const f = path.join(config, 'f.txt')
  fs.writeFileSync(f, 'x')
  it.each([
    [['bench', '--bogus'], 'unknown option --bogus'],
    [['bench', '-x'], 'unknown option -x'],
    [['bench', '--connections'], 'option --connections needs a value'],
    [['bench', '--streams', '--json'], 'option --streams needs a value'],
    [['bench', '--connections', 'abc'], '--connections expects an integer from 1 to 1024, got "abc"'],
    [['bench', '--streams', '0'], '--streams expects an integer from 1 to 1024'],
    [['bench', '--duration', '-1'], '--duration expects seconds from 0.1 to 86400, got "-1"'],
    [['bench', '--duration', 'soon'], '--duration expects seconds'],
    [['bench', '--bytes', '12XB'], '--bytes expects a size'],
    [['bench', '--packet-size', '100'], '--packet-size expects an integer from 1200 to 65527'],
    [['bench', '--engine', 'fast'], '--engine expects one of auto, quinn, quiche'],
    [['bench', '--json=yes'], '--json takes no value'],
    [['bench', 'nohost'], 'bad HOST:PORT "nohost"'],
    [['bench', 'example.com:0'], 'bad HOST:PORT "example.com:0"'],
    [['bench', '::1:443'], 'bad HOST:PORT'],
    [['bench', 'a:1', 'b:2'], 'unexpected argument "b:2"'],
    [['bench', '--duration', '1', '--bytes', '1M'], 'give --duration or --bytes, not both'],
    [['bench', '--server', '127.0.0.1:5'], '--server takes no HOST:PORT'],
    [['bench', '--server', '--connections', '2'], '--connections is a client option'],
    [['bench', '--port', '5'], '--port is a server option'],
    [['bench', '--server', '--host', 'localhost'], '--host expects an IP address'],
    [['bench', '--insecure'], 'the local server is pinned automatically'],
    [['bench', 'h:1', '--insecure', '--pin', 'ab'.repeat(32)], '--insecure cannot be combined'],
    [['bench', 'h:1', '--pin', 'cafe'], '--pin expects a SHA-256 fingerprint'],
    [['bench', 'h:1', '--ca', '/no/such/ca.pem'], 'cannot read --ca file'],
    [['serve'], 'missing DIR'],
    [['serve', '/no/such/dir'], 'cannot use directory'],
    [['serve', f], 'is not a directory'],
    [['serve', '-', '--force'], '--force is for a directory'],
    [['serve', '.', '--port', '70000'], '--port expects an integer from 0 to 65535'],
    [['send'], 'missing FILE'],
    [['send', f], 'missing HOST:PORT'],
    [['send', f, 'host'], 'bad HOST:PORT "host"'],
    [['send', f, 'h:1', 'extra'], 'unexpected argument "extra"'],
    [['send', '/no/such/file', 'h:1'], 'cannot read "/no/such/file"'],
    [['send', config, 'h:1'], 'not a regular file'],
    [['send', f, 'h:1', '--name', '../x'], 'bad file name'],
    [['send', f, 'h:1', '--name', '..'], 'bad file name'],
    [['send', f, 'h:1', '--timeout', '3'], 'unknown option --timeout'],
    [['doctor', '--verbose'], 'unknown option --verbose'],
    [['help', 'nope'], 'no command "nope"'],
  ])('stoq %j', async (args, message) => {
    const run = await runCli(args)
    expect(run.code).toBe(2)
    expect(run.stderr).toContain(message)
    expect(run.stdout).toBe('')
  })

  it('an unknown command or none at all', async () => {
    expect((await runCli(['frobnicate'])).code).toBe(2)
    const none = await runCli([])
    expect(none.code).toBe(2)
    expect(none.stderr).toContain('Commands:')
  })
})

describe('argument parsing', () => {
  it('parses sizes with binary and decimal units', () => {
    expect(parseSize('123')).toBe(123)
    expect(parseSize('3M')).toBe(3 * 1024 * 1024)
    expect(parseSize('3MiB')).toBe(3 * 1024 * 1024)
    expect(parseSize('1.5k')).toBe(1536)
    expect(parseSize('2GB')).toBe(2e9)
    expect(parseSize('1T')).toBe(1024 ** 4)
    for (const bad of ['', 'M', '1X', '-1', '1e3', '1 2']) expect(parseSize(bad)).toBeNull()
  })

  it('takes --name value, --name=value, "-" and "--"; errors are typed STOQ_ERR_INVALID_ARG', () => {
    const specs = { n: { type: 'int', min: 0, max: 9 }, s: { type: 'string' }, f: { type: 'flag' } } as const
    expect(parseArgs('t', ['--n', '3', '--s=a=b', '-', '--f', '--', '--n'], specs)).toEqual({
      values: { n: 3, s: 'a=b', f: true },
      positionals: ['-', '--n'],
      help: false,
    })
    let err: unknown
    try {
      parseArgs('t', ['--n', '10'], specs)
    } catch (e) {
      err = e
    }
    expect(StoqError.isInstance(err) && err.code).toBe('STOQ_ERR_INVALID_ARG')
  })
})
