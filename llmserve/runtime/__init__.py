"""Ray and Serve lifecycle: connect or start Ray, deploy, wait, drain and stop."""
