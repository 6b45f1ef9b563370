"""Bridges to outside engines: verl (policy losses and command lines) and its data format."""
