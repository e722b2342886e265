/** Sends queued in libuv above which the backend asks the sender to pause (bounds memory held by queued datagrams). */
export const DEFAULT_SEND_QUEUE_HIGH_WATER = 2048

/** Sends queued below which a paused sender resumes (hysteresis avoids flapping). */
export const DEFAULT_SEND_QUEUE_LOW_WATER = 512

/** Socket buffer requested by default: 4 MiB absorbs a burst of a large congestion window on loopback. */
export const DEFAULT_SOCKET_BUFFER_SIZE = 4 * 1024 * 1024
