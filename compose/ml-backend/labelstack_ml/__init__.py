"""labelstack's Label Studio ML backend: the protocol (server.py) around a LabelStudioMLBase class (base.py)."""
