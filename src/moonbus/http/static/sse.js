// Server-Sent Events parser for fetch() bodies (the text/event-stream format of
// the WHATWG HTML standard, "Server-sent events"). A file of its own so the
// browser tests can feed it chunks split anywhere; console.js reads the
// streams with it. Pure: no DOM, no network, no timers.
(function () {
  "use strict";

  const LINE_END = /\r\n|\r|\n/g;

  class SseParser {
    // lastId: the id to report until the stream sets one (a resumed stream
    // keeps the id it resumed from).
    constructor(lastId) {
      this.lastId = lastId === undefined ? null : lastId;
      this.buffer = "";
      this.skipLF = false; // the previous text ended with CR: a leading LF is part of it
      this.eventName = "";
      this.data = [];
    }

    // Feed decoded text; returns the messages it completed, in order, each
    // { event, data, id } ("message" when the stream named no event).
    push(text) {
      const out = [];
      if (this.skipLF && text.charCodeAt(0) === 10) text = text.slice(1);
      this.skipLF = false;
      const buf = this.buffer + text;
      let pos = 0;
      for (;;) {
        LINE_END.lastIndex = pos;
        const m = LINE_END.exec(buf);
        if (m === null) break;
        const line = buf.slice(pos, m.index);
        pos = m.index + m[0].length;
        if (m[0] === "\r" && pos === buf.length) this.skipLF = true;
        this.line(line, out);
      }
      this.buffer = buf.slice(pos);
      return out;
    }

    line(line, out) {
      if (line === "") {
        if (this.data.length > 0) {
          out.push({ event: this.eventName || "message", data: this.data.join("\n"), id: this.lastId });
        }
        this.eventName = "";
        this.data = [];
        return;
      }
      if (line.charCodeAt(0) === 58) return; // ":" a comment (the server's heartbeat)
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
      if (field === "event") this.eventName = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && value.indexOf("\0") === -1) this.lastId = value;
      // "retry" and unknown fields: ignored (console.js has its own backoff)
    }
  }

  window.MoonbusSse = Object.freeze({ SseParser });
})();
