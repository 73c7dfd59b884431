-- cuesched keeps everything of its own in schema cuesched, so `down` can
-- leave a Cuebot database exactly as it found it.
CREATE SCHEMA cuesched;

-- Deployment-wide settings every instance must agree on.
CREATE TABLE cuesched.setting (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    description text NOT NULL
);

INSERT INTO cuesched.setting (name, value, description) VALUES
    ('tag_buckets', '16', 'how many clusters the manual, hardware and hostname tags of a facility are hashed into');
