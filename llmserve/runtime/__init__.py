"""Ray and Serve lifecycle: ``ray`` connects to or starts Ray (with the flags Serve reads),
``serve`` deploys, waits, reports, drains and stops the app, ``ports`` picks free ports."""
