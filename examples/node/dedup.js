'use strict';

/** The last `size` ryze-ids seen; firstTime(id) is true once per id in the window. */
class SeenWindow {
  constructor(size = 10000) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`the window must hold at least one id, not ${size}`);
    this.size = size;
    this.ids = new Set();
  }

  firstTime(id) {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.size) {
      this.ids.delete(this.ids.values().next().value); // a Set iterates in insertion order
    }
    return true;
  }
}

module.exports = { SeenWindow };
