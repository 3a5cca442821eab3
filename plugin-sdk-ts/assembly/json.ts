// JSON values for a rule's config and a game state, read with the path of
// every value kept so that a wrong field is reported by name
// (`config.tiers[0].minutes: expected a whole number, got "x"`) without a
// rule checking each read. AssemblyScript has no exceptions: a read of the
// wrong type returns a zero value and records the first such error, which
// the SDK turns into the call's error.

/** What a JSON value is. */
export enum Kind {
  Missing,
  Null,
  Bool,
  Number,
  String,
  Array,
  Object,
}

let firstError: string | null = null;

/** Records an error (the first one wins) and returns nothing. */
export function reportError(message: string): void {
  if (firstError === null) firstError = message;
}

/** The first error recorded since the last call to `takeError`. */
export function takeError(): string | null {
  const error = firstError;
  firstError = null;
  return error;
}

function kindName(kind: Kind): string {
  switch (kind) {
    case Kind.Missing: return "nothing";
    case Kind.Null: return "null";
    case Kind.Bool: return "a boolean";
    case Kind.Number: return "a number";
    case Kind.String: return "a string";
    case Kind.Array: return "an array";
    default: return "an object";
  }
}

/** A JSON value and where it sits (`config.tiers[0]`). */
export class Json {
  kind: Kind = Kind.Missing;
  path: string;
  bool_: bool = false;
  number_: f64 = 0;
  string_: string = "";
  items: Json[] = [];
  keys: string[] = [];

  constructor(path: string) {
    this.path = path;
  }

  /** Whether the value is there at all (an absent field is `Missing`). */
  get exists(): bool {
    return this.kind != Kind.Missing;
  }

  /** Whether the value is there and not `null`. */
  get present(): bool {
    return this.kind != Kind.Missing && this.kind != Kind.Null;
  }

  private wrong(expected: string): void {
    let got = kindName(this.kind);
    if (this.kind == Kind.String) got = "\"" + this.string_ + "\"";
    if (this.kind == Kind.Number) got = this.number_.toString();
    reportError(this.path + ": expected " + expected + ", got " + got);
  }

  /** The object field `key` (`Missing` when absent or when this is no object). */
  get(key: string): Json {
    if (this.kind == Kind.Object) {
      for (let i = 0; i < this.keys.length; i++) {
        if (this.keys[i] == key) return this.items[i];
      }
    } else if (this.kind != Kind.Missing) {
      this.wrong("an object");
    }
    return new Json(this.path + "." + key);
  }

  /** Whether this object has the field `key`. */
  has(key: string): bool {
    return this.kind == Kind.Object && this.keys.includes(key);
  }

  /** Element `index` of an array. */
  at(index: i32): Json {
    if (this.kind == Kind.Array && index >= 0 && index < this.items.length) return this.items[index];
    if (this.kind != Kind.Array) this.wrong("an array");
    return new Json(this.path + "[" + index.toString() + "]");
  }

  /** The elements of an array (none, with an error, when this is not one). */
  array(): Json[] {
    if (this.kind == Kind.Array) return this.items;
    this.wrong("an array");
    return [];
  }

  /** The number of elements of an array or fields of an object. */
  get length(): i32 {
    return this.items.length;
  }

  /** A string value. */
  string(): string {
    if (this.kind == Kind.String) return this.string_;
    this.wrong("a string");
    return "";
  }

  /** A whole number from 0 to 4294967295. */
  u32(): u32 {
    const n = this.number_;
    if (this.kind == Kind.Number && n >= 0 && n <= 4294967295.0 && Math.floor(n) == n) return <u32>n;
    this.wrong("a whole number from 0 to 4294967295");
    return 0;
  }

  /** A whole number (within ±2^53, where JSON numbers are exact). */
  i64(): i64 {
    const n = this.number_;
    if (this.kind == Kind.Number && Math.abs(n) <= 9007199254740992.0 && Math.floor(n) == n) return <i64>n;
    this.wrong("a whole number");
    return 0;
  }

  /** Any number. */
  f64(): f64 {
    if (this.kind == Kind.Number) return this.number_;
    this.wrong("a number");
    return 0;
  }

  /** `true` or `false`. */
  bool(): bool {
    if (this.kind == Kind.Bool) return this.bool_;
    this.wrong("true or false");
    return false;
  }

  /** Reports the first field of this object not among `allowed`, as serde's `deny_unknown_fields` does. */
  onlyKeys(allowed: string[]): bool {
    if (this.kind != Kind.Object) {
      this.wrong("an object");
      return false;
    }
    for (let i = 0; i < this.keys.length; i++) {
      if (!allowed.includes(this.keys[i])) {
        reportError(this.path + "." + this.keys[i] + ": unknown field, expected one of " + allowed.join(", "));
        return false;
      }
    }
    return true;
  }

  /**
   * The value as compact JSON, as the Rust SDK's serde_json prints it: whole
   * numbers without a fraction, object keys sorted. `Missing` prints nothing.
   */
  toJson(): string {
    switch (this.kind) {
      case Kind.Missing: return "";
      case Kind.Null: return "null";
      case Kind.Bool: return this.bool_ ? "true" : "false";
      case Kind.Number: {
        const n = this.number_;
        if (Math.floor(n) == n && Math.abs(n) < 9007199254740992.0) return (<i64>n).toString();
        return n.toString();
      }
      case Kind.String: return quote(this.string_);
      case Kind.Array: {
        const parts = new Array<string>();
        for (let i = 0; i < this.items.length; i++) parts.push(this.items[i].toJson());
        return "[" + parts.join(",") + "]";
      }
      default: {
        const keys = this.keys.slice();
        keys.sort((a: string, b: string): i32 => (a < b ? -1 : a > b ? 1 : 0));
        const parts = new Array<string>();
        for (let i = 0; i < keys.length; i++) parts.push(quote(keys[i]) + ":" + this.get(keys[i]).toJson());
        return "{" + parts.join(",") + "}";
      }
    }
  }

  /** Whether this value equals `other` (same kind and contents). */
  equals(other: Json): bool {
    if (this.kind != other.kind) return false;
    switch (this.kind) {
      case Kind.Bool: return this.bool_ == other.bool_;
      case Kind.Number: return this.number_ == other.number_;
      case Kind.String: return this.string_ == other.string_;
      case Kind.Array:
      case Kind.Object: {
        if (this.items.length != other.items.length) return false;
        for (let i = 0; i < this.items.length; i++) {
          if (this.kind == Kind.Object) {
            if (!other.has(this.keys[i]) || !this.items[i].equals(other.get(this.keys[i]))) return false;
          } else if (!this.items[i].equals(other.items[i])) {
            return false;
          }
        }
        return true;
      }
      default: return true;
    }
  }
}

/** Parses `text` (JSON) as the value at `path`; a syntax error is reported and gives `Missing`. */
export function parseJson(text: string, path: string): Json {
  const parser = new Parser(text);
  const value = parser.value(path, 0);
  parser.space();
  if (parser.failed || parser.at < text.length) {
    reportError(path + ": not valid JSON (at character " + parser.at.toString() + ")");
    return new Json(path);
  }
  return value;
}

/** Nesting deeper than this is refused rather than risking the stack. */
const MAX_DEPTH = 64;

class Parser {
  text: string;
  at: i32 = 0;
  failed: bool = false;

  constructor(text: string) {
    this.text = text;
  }

  space(): void {
    while (this.at < this.text.length) {
      const c = this.text.charCodeAt(this.at);
      if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) break;
      this.at++;
    }
  }

  fail(path: string): Json {
    this.failed = true;
    return new Json(path);
  }

  literal(word: string): bool {
    if (this.text.substr(this.at, word.length) == word) {
      this.at += word.length;
      return true;
    }
    return false;
  }

  value(path: string, depth: i32): Json {
    this.space();
    if (this.failed || this.at >= this.text.length || depth > MAX_DEPTH) return this.fail(path);
    const c = this.text.charCodeAt(this.at);
    const v = new Json(path);
    if (c == 0x7b /* { */) {
      this.at++;
      v.kind = Kind.Object;
      this.space();
      if (this.text.charCodeAt(this.at) == 0x7d) {
        this.at++;
        return v;
      }
      while (true) {
        this.space();
        if (this.text.charCodeAt(this.at) != 0x22) return this.fail(path);
        const key = this.string();
        if (this.failed) return v;
        this.space();
        if (this.text.charCodeAt(this.at) != 0x3a /* : */) return this.fail(path);
        this.at++;
        v.keys.push(key);
        v.items.push(this.value(path + "." + key, depth + 1));
        this.space();
        const next = this.text.charCodeAt(this.at++);
        if (next == 0x7d) return v;
        if (next != 0x2c) return this.fail(path);
      }
    } else if (c == 0x5b /* [ */) {
      this.at++;
      v.kind = Kind.Array;
      this.space();
      if (this.text.charCodeAt(this.at) == 0x5d) {
        this.at++;
        return v;
      }
      while (true) {
        v.items.push(this.value(path + "[" + v.items.length.toString() + "]", depth + 1));
        this.space();
        const next = this.text.charCodeAt(this.at++);
        if (next == 0x5d) return v;
        if (next != 0x2c) return this.fail(path);
      }
    } else if (c == 0x22) {
      v.kind = Kind.String;
      v.string_ = this.string();
    } else if (this.literal("true")) {
      v.kind = Kind.Bool;
      v.bool_ = true;
    } else if (this.literal("false")) {
      v.kind = Kind.Bool;
    } else if (this.literal("null")) {
      v.kind = Kind.Null;
    } else {
      const start = this.at;
      while (this.at < this.text.length) {
        const d = this.text.charCodeAt(this.at);
        if (!((d >= 0x30 && d <= 0x39) || d == 0x2d || d == 0x2b || d == 0x2e || d == 0x65 || d == 0x45)) break;
        this.at++;
      }
      if (start == this.at) return this.fail(path);
      const number = F64.parseFloat(this.text.substring(start, this.at));
      if (isNaN(number)) return this.fail(path);
      v.kind = Kind.Number;
      v.number_ = number;
    }
    return v;
  }

  /** A string literal, the cursor on its opening quote. */
  string(): string {
    this.at++;
    let out = "";
    let start = this.at;
    while (this.at < this.text.length) {
      const c = this.text.charCodeAt(this.at);
      if (c == 0x22) {
        out += this.text.substring(start, this.at);
        this.at++;
        return out;
      }
      if (c == 0x5c /* \ */) {
        out += this.text.substring(start, this.at);
        const e = this.text.charCodeAt(this.at + 1);
        this.at += 2;
        if (e == 0x6e) out += "\n";
        else if (e == 0x74) out += "\t";
        else if (e == 0x72) out += "\r";
        else if (e == 0x62) out += "\b";
        else if (e == 0x66) out += "\f";
        else if (e == 0x75 /* u */) {
          let code = 0;
          for (let k = 0; k < 4; k++) {
            const h = this.at + k < this.text.length ? this.text.charCodeAt(this.at + k) : 0;
            const digit = h >= 0x30 && h <= 0x39 ? h - 0x30 : (h | 0x20) >= 0x61 && (h | 0x20) <= 0x66 ? (h | 0x20) - 0x57 : -1;
            if (digit < 0) {
              this.failed = true;
              return out;
            }
            code = code * 16 + digit;
          }
          out += String.fromCharCode(code);
          this.at += 4;
        } else out += String.fromCharCode(e);
        start = this.at;
        continue;
      }
      this.at++;
    }
    this.failed = true;
    return out;
  }
}

/** `text` as a JSON string literal. */
export function quote(text: string): string {
  let out = "\"";
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c == 0x22) out += "\\\"";
    else if (c == 0x5c) out += "\\\\";
    else if (c == 0x0a) out += "\\n";
    else if (c == 0x0d) out += "\\r";
    else if (c == 0x09) out += "\\t";
    else if (c == 0x08) out += "\\b";
    else if (c == 0x0c) out += "\\f";
    else if (c < 0x20) out += "\\u" + c.toString(16).padStart(4, "0");
    else out += String.fromCharCode(c);
  }
  return out + "\"";
}
