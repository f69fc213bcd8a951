"""Tests of the Label Studio server and connector (real server where marked)."""
