// What js-libp2p 2.x uses that older Node versions lack, defined only where missing.
// Imported by peer.mjs before any libp2p module, so it runs first.
//
// - Promise.withResolvers: Node 22 (abort-error, it-queue and mortice call it).
// - CustomEvent as a global: Node 19 (libp2p's event emitters dispatch CustomEvents); Debian 12's
//   Node 18 has Event and EventTarget but not CustomEvent.

if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

if (typeof globalThis.CustomEvent !== 'function') {
  globalThis.CustomEvent = class CustomEvent extends Event {
    #detail
    constructor (type, options = {}) {
      super(type, options)
      this.#detail = options.detail ?? null
    }

    get detail () { return this.#detail }
  }
}
