"""The wire protocols: pure decoding and encoding of the bodies each protocol speaks."""
