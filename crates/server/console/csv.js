// Reading bits of a CSV File in the browser without loading it: the header row, and the
// rows that start on given lines (to show the cells a dry run complained about). Files of
// several GiB stay on disk: only the bytes up to the last line wanted are streamed.

const LF = 10;
const QUOTE = 34;
const MAX_RECORD = 1 << 20; // a row longer than 1 MiB is cut for display

/** The bytes of the file, decompressed when its name ends in `.gz`. */
function byteStream(file) {
  const s = file.stream();
  if (/\.gz$/i.test(file.name) && typeof DecompressionStream !== 'undefined') {
    return s.pipeThrough(new DecompressionStream('gzip'));
  }
  return s;
}

/** Whether the console can read this file's text (plain, or gzip where the browser inflates). */
export const readable = (file) => !/\.(zst|zstd)$/i.test(file.name)
  && (!/\.gz$/i.test(file.name) || typeof DecompressionStream !== 'undefined');

/**
 * Parses one RFC 4180 record of `text` starting at `pos`: `{cells, end}` (end = index after
 * its line end), or null when the text ends inside it (`final`: take what there is).
 */
export function parseRecord(text, pos = 0, final = false) {
  const cells = [];
  let cell = '';
  let i = pos;
  let quoted = false;
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') { cell += '"'; i += 2; continue; }
        if (i + 1 >= text.length && !final) return null;
        quoted = false;
        i += 1;
        continue;
      }
      cell += c;
      i += 1;
      continue;
    }
    if (c === '"' && cell === '') { quoted = true; i += 1; continue; }
    if (c === ',') { cells.push(cell); cell = ''; i += 1; continue; }
    if (c === '\n' || c === '\r') {
      cells.push(cell);
      if (c === '\r' && text[i + 1] === '\n') i += 1;
      else if (c === '\r' && i + 1 >= text.length && !final) return null;
      return { cells, end: i + 1 };
    }
    cell += c;
    i += 1;
  }
  if (!final) return null;
  cells.push(cell);
  return { cells, end: i };
}

const stripBom = (t) => (t.charCodeAt(0) === 0xfeff ? t.slice(1) : t);

/** The header row's column names (reads at most 4 MiB). */
export async function readHeader(file) {
  const reader = byteStream(file).getReader();
  const dec = new TextDecoder('utf-8');
  let text = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (value) text += dec.decode(value, { stream: true });
      const rec = parseRecord(stripBom(text), 0, done);
      if (rec) return rec.cells;
      if (done) return [];
      if (text.length > 4 << 20) throw new Error('no end of the header row in the first 4 MiB');
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/**
 * The rows that start on the given 1-based lines (lines counted by LF, as the server counts
 * them): Map line → {cells, truncated}. `onProgress(bytesRead)`; `signal` aborts.
 */
export async function readRows(file, lines, onProgress, signal) {
  const wanted = [...new Set(lines)].filter((n) => n >= 1).sort((a, b) => a - b);
  const out = new Map();
  if (!wanted.length) return out;
  const reader = byteStream(file).getReader();
  let line = 1; // line number at `pos`
  let next = 0; // index into wanted
  let capture = null; // {line, parts: [Uint8Array], size, quoted}
  let read = 0;
  const finish = () => {
    const bytes = new Uint8Array(capture.size);
    let o = 0;
    for (const p of capture.parts) { bytes.set(p, o); o += p.length; }
    let text = new TextDecoder('utf-8').decode(bytes);
    if (capture.line === 1) text = stripBom(text);
    const rec = parseRecord(text, 0, true);
    out.set(capture.line, { cells: rec ? rec.cells : [text], truncated: capture.size >= MAX_RECORD });
    capture = null;
  };
  try {
    let atLineStart = true;
    while (next < wanted.length || capture) {
      if (signal?.aborted) throw new DOMException('cancelled', 'AbortError');
      const { value, done } = await reader.read();
      if (done) break;
      read += value.length;
      onProgress?.(read);
      let pos = 0;
      while (pos < value.length) {
        if (capture) {
          // Inside a wanted row: it ends at a line feed outside quotes.
          let i = pos;
          for (; i < value.length; i += 1) {
            const b = value[i];
            if (b === QUOTE) capture.quoted = !capture.quoted;
            else if (b === LF) {
              if (!capture.quoted) break;
              line += 1;
            }
          }
          const part = value.subarray(pos, Math.min(i, pos + (MAX_RECORD - capture.size)));
          capture.parts.push(part.slice());
          capture.size += part.length;
          if (i < value.length) { // the row's end
            line += 1;
            pos = i + 1;
            atLineStart = true;
            finish();
          } else pos = value.length;
          continue;
        }
        if (atLineStart && next < wanted.length && wanted[next] === line) {
          capture = { line, parts: [], size: 0, quoted: false };
          next += 1;
          continue;
        }
        if (next >= wanted.length) break;
        const nl = value.indexOf(LF, pos);
        if (nl < 0) { atLineStart = false; pos = value.length; break; }
        line += 1;
        pos = nl + 1;
        atLineStart = true;
        // Lines skipped over (wanted lines inside an unwanted quoted row) are never row starts.
        while (next < wanted.length && wanted[next] < line) next += 1;
      }
    }
    if (capture) finish();
  } finally {
    reader.cancel().catch(() => {});
  }
  return out;
}
