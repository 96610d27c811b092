"""The perceptlite factory: heavy, offline tools that produce model packages. Never imported by the runtime."""
