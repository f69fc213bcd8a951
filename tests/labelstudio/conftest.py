"""The Label Studio fixtures live in tests/labelstudio/fixtures.py, registered for the whole
test session by tests/conftest.py, so every folder shares one server per session."""
