import diagnostics from 'node:diagnostics_channel'

/**
 * `diagnostics_channel` events of STOQ's connection and stream lifecycle, named like Node's
 * own (`net.client.socket`, `http.client.request.start`) and undici's (`undici:client:connected`).
 * Publishing costs one `hasSubscribers` check when nobody listens; nothing is published per
 * packet. Subscribe with `diagnostics_channel.subscribe('stoq:connection:established', fn)`.
 *
 * Messages:
 * - `stoq:connection:create` `{ connection }` — a client dialled or a server accepted a peer
 * - `stoq:connection:established` `{ connection }` — the handshake completed
 * - `stoq:connection:closed` `{ connection, info }` — the connection ended (`info`: remote, app, code, reason, idleTimeout)
 * - `stoq:stream:open` `{ connection, stream, local }` — a stream was opened here or by the peer
 * - `stoq:stream:closed` `{ connection, stream }` — the connection forgot a finished stream
 */
export const DIAGNOSTICS_CHANNELS = {
  connectionCreate: 'stoq:connection:create',
  connectionEstablished: 'stoq:connection:established',
  connectionClosed: 'stoq:connection:closed',
  streamOpen: 'stoq:stream:open',
  streamClosed: 'stoq:stream:closed',
} as const

export const channels = {
  connectionCreate: diagnostics.channel(DIAGNOSTICS_CHANNELS.connectionCreate),
  connectionEstablished: diagnostics.channel(DIAGNOSTICS_CHANNELS.connectionEstablished),
  connectionClosed: diagnostics.channel(DIAGNOSTICS_CHANNELS.connectionClosed),
  streamOpen: diagnostics.channel(DIAGNOSTICS_CHANNELS.streamOpen),
  streamClosed: diagnostics.channel(DIAGNOSTICS_CHANNELS.streamClosed),
}
