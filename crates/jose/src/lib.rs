//! Keys and JWS: key loading and generation, RFC 7638 kids, RS384/ES384 signing and verification, JWKS
