"""labelstack's Label Studio ML backend: the protocol (server.py) around one small model class (model.py)."""
