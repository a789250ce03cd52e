"""Test helpers and fake models: service processes, tiny and playground models, images, certificates.

Used by tests/ and bench/ (installed with the package; no model image or served code imports it).
"""
