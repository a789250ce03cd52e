"""The shapes reference models: the architectures, class names, model cards and weight files
of the models this project trains on its synthetic shapes world (the `shapes` lab trains them).

A leaf the model services may use: nothing here imports the services, the lab's scene
generator, training or evaluation code (`make lint` checks it).
"""
