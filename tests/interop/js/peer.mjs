// A js-libp2p peer (TCP, Noise, yamux; ping and identify) for tests/overlay/test_js_interop.py.
//
// It serves the same two bulk protocols as node/plain_peer.py, so either side can run the other's
// exchange against it:
//   /enclave-swarm/interop/sink/1.0.0    read until the writer closes, answer the SHA-256 (32 bytes)
//   /enclave-swarm/interop/source/1.0.0  read an 8-byte big-endian length N, write N pattern bytes
// where the pattern is SHAKE-256("enclave-swarm interop") cut to N bytes.
//
//   node peer.mjs listen
//     prints one JSON line {"peer_id", "addrs", "agent_version", "protocols", "node_version"}
//   node peer.mjs dial MULTIADDR BYTES
//     prints the same first line, dials MULTIADDR, runs an exchange of BYTES with that peer and
//     prints its report (below) as one JSON line
// Then either mode serves, and runs the exchanges that stdin asks for, one JSON line each,
// {"exchange": PEER_ID, "bytes": N}, each answered with one report line, until stdin closes.
//
// Report of an exchange with a peer: what identify said about it (js-libp2p's own identify of the
// connection), three ping round trips in ms, the connection's encryption and muxer, and whether
// the N bytes it sank hashed right and the N bytes from its source matched the pattern.
// Exit code 1 on any failure (its message on stderr), 2 on a usage error.

import './polyfill.mjs'

import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'
import { readFileSync } from 'node:fs'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { publicKeyFromProtobuf } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { peerIdFromString, peerIdFromPublicKey } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

const SINK = '/enclave-swarm/interop/sink/1.0.0'
const SOURCE = '/enclave-swarm/interop/source/1.0.0'
const CHUNK = 256 * 1024
const MAX_SOURCE_BYTES = 1 << 30
const TIMEOUT_MS = 60_000

const LIBP2P_VERSION = JSON.parse(readFileSync(new URL('./node_modules/libp2p/package.json', import.meta.url))).version
const AGENT_VERSION = `enclave-swarm-interop js-libp2p/${LIBP2P_VERSION} node/${process.version}`

function pattern (n) {
  return createHash('shake256', { outputLength: n }).update('enclave-swarm interop').digest()
}

function * chunks (data) {
  for (let i = 0; i < data.length; i += CHUNK) yield data.subarray(i, i + CHUNK)
}

async function readToEnd (source) {
  const parts = []
  for await (const list of source) parts.push(list.subarray())
  return Buffer.concat(parts)
}

// Exactly n bytes from the front of a stream's source; the rest of the source stays unread.
async function readExactly (iterator, n) {
  const parts = []
  let have = 0
  while (have < n) {
    const { value, done } = await iterator.next()
    if (done) throw new Error(`stream ended after ${have} of ${n} bytes`)
    const bytes = value.subarray()
    parts.push(bytes)
    have += bytes.length
  }
  const all = Buffer.concat(parts)
  if (all.length !== n) throw new Error(`${all.length - n} bytes past the ${n} expected`)
  return all
}

async function handleSink ({ stream }) {
  const hash = createHash('sha256')
  for await (const list of stream.source) hash.update(list.subarray())
  await stream.sink([hash.digest()])
}

async function handleSource ({ stream }) {
  const n = Number((await readExactly(stream.source[Symbol.asyncIterator](), 8)).readBigUInt64BE())
  if (n > MAX_SOURCE_BYTES) {
    stream.abort(new Error(`source of ${n} bytes refused`))
    return
  }
  await stream.sink(chunks(pattern(n)))
}

// js-libp2p identifies the peer of every new connection by itself, and allows one identify stream
// per connection at a time, so an exchange uses that result rather than a second identify.
const identified = new Map() // peer id -> { promise, resolve } of its IdentifyResult

function identifiedBy (peerId) {
  const key = peerId.toString()
  if (!identified.has(key)) identified.set(key, Promise.withResolvers())
  return identified.get(key)
}

function untilAborted (promise, signal) {
  return Promise.race([promise, new Promise((resolve, reject) => {
    signal.addEventListener('abort', () => reject(signal.reason), { once: true })
  })])
}

async function start () {
  const node = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify({ agentVersion: AGENT_VERSION }), ping: ping() }
  })
  node.addEventListener('peer:identify', (evt) => identifiedBy(evt.detail.peerId).resolve(evt.detail))
  await node.handle(SINK, handleSink)
  await node.handle(SOURCE, handleSource)
  await node.start()
  return node
}

function describe (node) {
  return {
    peer_id: node.peerId.toString(),
    addrs: node.getMultiaddrs().map(String),
    agent_version: AGENT_VERSION,
    protocols: node.getProtocols().sort(),
    node_version: process.version
  }
}

async function exchange (node, peerId, n) {
  const signal = AbortSignal.timeout(TIMEOUT_MS)
  const conn = node.getConnections(peerId)[0]
  if (conn == null) throw new Error(`not connected to ${peerId}`)
  const id = await untilAborted(identifiedBy(peerId).promise, signal)
  const publicKeyPeerId = id.publicKey == null ? null : peerIdFromPublicKey(publicKeyFromProtobuf(id.publicKey))
  const rtts = []
  for (let i = 0; i < 3; i++) rtts.push(await node.services.ping.ping(peerId, { signal }))
  const data = pattern(n)
  const sink = await node.dialProtocol(peerId, SINK, { signal })
  const [, digest] = await Promise.all([sink.sink(chunks(data)), readToEnd(sink.source)])
  const source = await node.dialProtocol(peerId, SOURCE, { signal })
  const length = Buffer.alloc(8)
  length.writeBigUInt64BE(BigInt(n))
  const [, got] = await Promise.all([source.sink([length]), readToEnd(source.source)])
  return {
    identify: {
      peer_id: id.peerId.toString(),
      public_key_peer_id: publicKeyPeerId?.toString() ?? null,
      agent_version: id.agentVersion ?? null,
      protocol_version: id.protocolVersion ?? null,
      protocols: [...id.protocols].sort(),
      listen_addrs: id.listenAddrs.map(String),
      observed_addr: id.observedAddr?.toString() ?? null
    },
    encryption: conn.encryption,
    multiplexer: conn.multiplexer,
    ping_rtts_ms: rtts,
    sent_digest_ok: digest.equals(createHash('sha256').update(data).digest()),
    received_ok: got.equals(data)
  }
}

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

async function serveCommands (node) {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim() === '') continue
    const cmd = JSON.parse(line)
    emit(await exchange(node, peerIdFromString(cmd.exchange), cmd.bytes))
  }
}

async function main (argv) {
  const [mode, ...rest] = argv
  if (!((mode === 'listen' && rest.length === 0) || (mode === 'dial' && rest.length === 2))) {
    process.stderr.write('usage: node peer.mjs listen | node peer.mjs dial MULTIADDR BYTES\n')
    return 2
  }
  const node = await start()
  emit(describe(node))
  if (mode === 'dial') {
    const conn = await node.dial(multiaddr(rest[0]), { signal: AbortSignal.timeout(TIMEOUT_MS) })
    emit(await exchange(node, conn.remotePeer, Number(rest[1])))
  }
  await serveCommands(node)
  await node.stop()
  return 0
}

// Exit at once either way: a failed exchange leaves the node's sockets open, which would keep
// Node running. (Writes to a pipe are synchronous on Linux, so nothing printed is lost.)
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => { process.stderr.write(`peer.mjs: ${err.stack ?? err}\n`); process.exit(1) }
)
