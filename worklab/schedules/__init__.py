"""The outer loops: each decides what happens between Trainer and Tester calls."""
