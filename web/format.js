// Numbers, sizes and times as the page shows them.

// A finite number, else null (the server leaves out or nulls what it has not measured yet).
export const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);

export const fixed = (v, digits) => (num(v) === null ? null : v.toFixed(digits));

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// Local time as YYYYMMDD-HHMMSS, for the names of saved files.
export function stamp() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}
