"""Compare vision models side by side behind one gRPC contract.

The subpackages, from the bottom layer up (docs/architecture.md): `v1` and `oip`, the generated
contracts; `runtime`, the server runtime; `shapes_models`, the shapes reference models;
`maskrcnn` and `samclip`, the model services; `gateway`, the comparison server; `tools`, the
vcompare tools; `testing`, test helpers and fake models.
"""
