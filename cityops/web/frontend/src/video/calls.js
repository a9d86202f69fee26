// Click-to-call: an RFC 3966 tel: URI of a number as people write it ("023-5222 1234", "+86 138…"): spaces dropped,
// '-' kept (a visual separator the standard allows). Anything that is not a phone number gives no link.
export function telUri(number) {
  const n = (number || "").trim();
  if (!/^\+?[0-9][0-9\- ]{2,30}$/.test(n)) return null;
  return `tel:${n.replace(/ /g, "")}`;
}
