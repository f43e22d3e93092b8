"""Test doubles that ship with the package, so that processes Ray starts can import them."""
