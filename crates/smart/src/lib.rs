//! SMART Backend Services client: discovery, client assertions, token requests and the auth manager
