"""Frame bytes -> tensors -> model -> masks and activity: the one pipeline shared by node, replay and bench."""
