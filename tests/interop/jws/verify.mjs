// Checks every kind of JWS MEDICODAX emits with panva `jose`: compactVerify against the
// gateway's published JWKS (key chosen by kid), algorithms RS384/ES384 only, expected typ.
// A tampered copy (one payload character changed) must be rejected.
//
// stdin: {"jwks": {...}, "tokens": [{"name", "typ", "jws"}, ...]}
// stdout: one JSON array, per token {"name", "jose", "jose_rejects_tampered"}.
import { compactVerify, createLocalJWKSet } from 'jose';

let input = '';
for await (const chunk of process.stdin) input += chunk;
const req = JSON.parse(input);
const keys = createLocalJWKSet(req.jwks);

function tamper(token) {
  const [h, p, s] = token.split('.');
  const i = Math.floor(p.length / 2);
  const c = p[i] !== 'A' ? 'A' : 'B';
  return [h, p.slice(0, i) + c + p.slice(i + 1), s].join('.');
}

async function check(token, typ) {
  try {
    const { protectedHeader } = await compactVerify(token, keys, { algorithms: ['RS384', 'ES384'] });
    if (protectedHeader.typ !== typ) return `typ ${protectedHeader.typ}`;
    return true;
  } catch (e) {
    return `${e.code || e.name}: ${e.message}`;
  }
}

const out = [];
for (const t of req.tokens) {
  out.push({ name: t.name, jose: await check(t.jws, t.typ), jose_rejects_tampered: (await check(tamper(t.jws), t.typ)) !== true });
}
process.stdout.write(`${JSON.stringify(out)}\n`);
