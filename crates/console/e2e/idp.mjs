// A real OpenID Connect provider for the console's browser suite: panva's oidc-provider
// (OpenID Certified), with its development login and consent pages, on 127.0.0.1 over http.
//
// Why it exists: the console's sign-in is the authorization code flow with PKCE, state and
// nonce against the company's IdP. The suite signs in through a real one, in a real browser,
// rather than a stand-in that would only return what the console expects.
//
// Usage: node idp.mjs <console base URL, e.g. http://127.0.0.1:8081>
// Prints one line of JSON on stdout once it accepts connections: {"issuer": ..., "port": ...}.
// Runs until killed.
//
// The client `portcullis-console` is public (token_endpoint_auth_method none, PKCE S256
// required). People: `finance.lead` (group finance-leads) and `eve.engineer` (engineering).
// The login page takes any password (it is oidc-provider's development interaction), but only
// these accounts exist: another login is refused by the provider.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const consoleUrl = process.argv[2];
if (!consoleUrl) {
  console.error('usage: node idp.mjs <console base URL>');
  process.exit(2);
}

export const ACCOUNTS = {
  'finance.lead': { name: 'Fiona Finance', email: 'fiona@example.com', groups: ['finance-leads'] },
  'eve.engineer': { name: 'Eve Engineer', email: 'eve@example.com', groups: ['engineering'] },
};

// A fresh RSA signing key on each start, published in the JWKS.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: `e2e-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' };

const configuration = {
  clients: [
    {
      client_id: 'portcullis-console',
      token_endpoint_auth_method: 'none',
      redirect_uris: [`${consoleUrl}/console/auth/callback`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  // Scopes and the claims each releases; `groups` is its own scope, as at many IdPs.
  claims: {
    openid: ['sub'],
    profile: ['name'],
    email: ['email'],
    groups: ['groups'],
  },
  // Put the scopes' claims in the ID token of the code flow (the console reads the ID token
  // only, never the userinfo endpoint).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  jwks: { keys: [signing] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, id) {
    const person = ACCOUNTS[id];
    if (!person) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, ...person };
      },
    };
  },
  ttl: { Session: 600, Interaction: 600, Grant: 600, AuthorizationCode: 60, IdToken: 600, AccessToken: 600 },
};

const server = (await import('node:http')).createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration);
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
