// A small MessagePack decoder (decode only), enough for dashboard-server's binary frames.
//
// decodeMsgpack(bytes) -> value. `bytes` is a Uint8Array or an ArrayBuffer. Maps decode to plain
// objects (keys turned into strings; a `__proto__` key is kept as an own member, as JSON.parse
// keeps it), arrays to arrays, str to strings, bin to Uint8Array, ints
// and floats to numbers (64-bit ints outside +-2^53 lose precision, as JSON.parse would), ext to
// {ext: type, data: Uint8Array}. Throws an Error on truncated or invalid input.
// No dependencies, no DOM: works in browsers and in node.

const utf8 = new TextDecoder("utf-8", { fatal: true });

export function decodeMsgpack(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;

  function need(n) {
    if (pos + n > bytes.length) throw new Error(`msgpack: truncated at byte ${pos}`);
  }
  function u8() { need(1); return bytes[pos++]; }
  function u16() { need(2); const v = view.getUint16(pos); pos += 2; return v; }
  function u32() { need(4); const v = view.getUint32(pos); pos += 4; return v; }
  function str(n) { need(n); const s = utf8.decode(bytes.subarray(pos, pos + n)); pos += n; return s; }
  function bin(n) { need(n); const b = bytes.slice(pos, pos + n); pos += n; return b; }
  function arr(n) { const a = new Array(n); for (let i = 0; i < n; i++) a[i] = value(); return a; }
  function map(n) {
    const o = {};
    for (let i = 0; i < n; i++) {
      const k = value();
      const key = typeof k === "string" ? k : String(k);
      const v = value();
      // `o["__proto__"] = v` would set the prototype (or do nothing) instead of adding a member
      if (key === "__proto__") {
        Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true });
      } else {
        o[key] = v;
      }
    }
    return o;
  }
  function ext(n) { const type = view.getInt8((need(1), pos++)); return { ext: type, data: bin(n) }; }

  function value() {
    const b = u8();
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xe0) === 0xa0) return str(b & 0x1f);
    if ((b & 0xf0) === 0x90) return arr(b & 0x0f);
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    let v;
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u8());
      case 0xc5: return bin(u16());
      case 0xc6: return bin(u32());
      case 0xc7: return ext(u8());
      case 0xc8: return ext(u16());
      case 0xc9: return ext(u32());
      case 0xca: need(4); v = view.getFloat32(pos); pos += 4; return v;
      case 0xcb: need(8); v = view.getFloat64(pos); pos += 8; return v;
      case 0xcc: return u8();
      case 0xcd: return u16();
      case 0xce: return u32();
      case 0xcf: need(8); v = Number(view.getBigUint64(pos)); pos += 8; return v;
      case 0xd0: need(1); v = view.getInt8(pos); pos += 1; return v;
      case 0xd1: need(2); v = view.getInt16(pos); pos += 2; return v;
      case 0xd2: need(4); v = view.getInt32(pos); pos += 4; return v;
      case 0xd3: need(8); v = Number(view.getBigInt64(pos)); pos += 8; return v;
      case 0xd4: return ext(1);
      case 0xd5: return ext(2);
      case 0xd6: return ext(4);
      case 0xd7: return ext(8);
      case 0xd8: return ext(16);
      case 0xd9: return str(u8());
      case 0xda: return str(u16());
      case 0xdb: return str(u32());
      case 0xdc: return arr(u16());
      case 0xdd: return arr(u32());
      case 0xde: return map(u16());
      case 0xdf: return map(u32());
      default: throw new Error(`msgpack: invalid byte 0x${b.toString(16)} at ${pos - 1}`);
    }
  }

  const result = value();
  if (pos !== bytes.length) throw new Error(`msgpack: ${bytes.length - pos} trailing bytes`);
  return result;
}
