'use strict';
// Debounce like an editor does before asking for a completion.
function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

export class Cache {
  #map = new Map();
  constructor(limit = 128) { this.limit = limit; }
  get(key) {
    const v = this.#map.get(key);
    if (v !== undefined) { this.#map.delete(key); this.#map.set(key, v); }
    return v;
  }
  set(key, value) {
    this.#map.set(key, value);
    if (this.#map.size > this.limit) this.#map.delete(this.#map.keys().next().value);
  }
}
const total = [1, 2, 3].reduce((a, b) => a + b, 0) ?? 0;
console.log(`total=${total}`, debounce);
