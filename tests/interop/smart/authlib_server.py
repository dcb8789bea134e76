"""An authlib + Flask token endpoint that judges MEDICODAX client assertions.

SMART Backend Services style: ClientCredentialsGrant with JWTBearerClientAssertion
(private_key_jwt). As shipped, authlib decodes assertions without an algorithm list and
so refuses RS384; here it decodes with algorithms=["RS384", "ES384"]. authlib checks iss,
sub == iss, aud (the token endpoint), exp and jti replay; this harness adds the SMART
5-minute rules: iat present, exp - iat <= 300 s, exp at most 5 minutes ahead.

Environment: SMART_JWKS_FILE (our JWKS), SMART_CLIENT_ID, SMART_SCOPES (space-separated).
Binds 127.0.0.1 on a free port and prints one JSON line: {"port", "token_endpoint"}.
Why a request was refused goes to stderr.
"""

import json
import os
import sys
import time

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import Flask
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from werkzeug.serving import make_server

JWKS = json.load(open(os.environ["SMART_JWKS_FILE"]))
CLIENT_ID = os.environ["SMART_CLIENT_ID"]
SCOPES = [s for s in os.environ.get("SMART_SCOPES", "").split(" ") if s]
AUTH_METHOD = "private_key_jwt"


def log(**fields):
    sys.stderr.write(json.dumps(fields) + "\n")
    sys.stderr.flush()


class Client(ClientMixin):
    def get_client_id(self):
        return CLIENT_ID

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        return " ".join(s for s in (scope or "").split(" ") if s in SCOPES)

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return False

    def check_endpoint_auth_method(self, method, endpoint):
        return method == AUTH_METHOD and endpoint == "token"

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"


class SmartAssertion(JWTBearerClientAssertion):
    CLIENT_AUTH_METHOD = AUTH_METHOD

    def __init__(self, token_url):
        super().__init__(validate_jti=True, leeway=30)
        self.audience = token_url
        self.seen = set()

    def get_audiences(self):
        return [self.audience]

    def validate_jti(self, claims, jti):
        key = (claims["sub"], jti)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def resolve_client_public_key(self, client):
        return KeySet.import_key_set(JWKS)

    def process_assertion_claims(self, assertion, resolve_key):
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=["RS384", "ES384"])
        except JoseError as e:
            log(event="invalid_client", detail=f"decode: {e.description}")
            raise InvalidClientError(description=e.description) from e
        claims = token.claims
        try:
            self.verify_claims(claims)
        except InvalidClientError as e:
            log(event="invalid_client", detail=e.description)
            raise
        now = int(time.time())
        if not isinstance(claims.get("iat"), int):
            raise InvalidClientError(description="iat is required")
        if claims["exp"] - claims["iat"] > 300 or claims["exp"] - now > 300:
            log(event="invalid_client", detail="exp more than 5 minutes after iat or now")
            raise InvalidClientError(description="exp must be at most 5 minutes ahead")
        return claims


class SmartClientCredentials(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = [AUTH_METHOD]


def main():
    app = Flask("medicodax-smart-authlib")
    app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": 300}
    server = AuthorizationServer(app, query_client=lambda cid: Client() if cid == CLIENT_ID else None, save_token=lambda token, request: None)
    srv = make_server("127.0.0.1", 0, app)
    token_url = f"http://127.0.0.1:{srv.server_port}/token"
    server.register_client_auth_method(AUTH_METHOD, SmartAssertion(token_url))
    server.register_grant(SmartClientCredentials)

    @app.route("/token", methods=["POST"])
    def token():
        return server.create_token_response()

    print(json.dumps({"port": srv.server_port, "token_endpoint": token_url}), flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
